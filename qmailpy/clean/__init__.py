"""qmail-clean: removes queue files that qmail-send and qmail-todo may not touch."""
