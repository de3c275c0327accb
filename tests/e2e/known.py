"""Known failures of the last full-suite run, marked xfail (not skipped: they run and report XFAIL/XPASS)."""

KNOWN_FAILURE = (
    "failed in the lead's final full-suite run on a loaded machine (the local node started by start_system "
    "never bound the module's pods) though it passed in its author's runs; see the closing note"
)
