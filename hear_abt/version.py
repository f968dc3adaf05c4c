"""The package version, in a module of its own: the modules that record it
(checkpoint provenance, `hear-abt --version`) import it without importing the
package's HEAR API, and setup.py reads it without importing anything."""
__version__ = "0.1.0"
