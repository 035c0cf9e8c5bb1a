"""The lab: decaylab's application, built on the library (:mod:`decaylab`) and the engine (:mod:`decaylab.engine`).

Experiments (one module each), the sweep of a user's module, the runner and its backends (local, Ray), the
SQLite store, outputs (tables, JSON), figures, reports and the ``decaylab`` command line. Nothing below this
package imports it: ``import decaylab`` and ``import decaylab.engine`` never load the lab.
"""
