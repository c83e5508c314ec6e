"""Reports, one format per file. They read result records; they never measure or decide."""
