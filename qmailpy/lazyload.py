"""After a module loaded on first use could not be loaded (an I/O error while Python looked for
its files), the next try must look at the disk again.

Python remembers a package directory it could not stat as one without a finder
(sys.path_importer_cache[dir] = None): every later import from it fails in that process
(ModuleNotFoundError), which in a long-running one (a qmail-tcpserver worker or its parent,
qmail-usersd, qmail-rspawn's forked children's parent) is until a restart. One transient EIO
would so turn, say, every later DNS lookup of a worker into "noload" (rblhosts then lists
nobody). forget() drops what the import system remembered; it costs a walk over
sys.path_importer_cache, only on such a failure."""


def forget():
    import importlib
    importlib.invalidate_caches()
