"""qmail-lspawn and qmail-rspawn: run one delivery program per recipient for qmail-send."""
