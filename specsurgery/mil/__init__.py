"""ML Program (MIL) support: the blob weight file and program helpers."""
