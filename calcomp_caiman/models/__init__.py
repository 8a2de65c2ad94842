"""Bundled model folders (installed as ``calcomp_caiman.models``); see README.md here."""
