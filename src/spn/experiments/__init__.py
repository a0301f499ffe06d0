"""Experiments: the applications built on the library, ``spn demo`` (:mod:`spn.experiments.demo`)
and ``spn compare`` (:mod:`spn.experiments.compare`). Nothing in spn imports them but the
tasks (:mod:`spn.tasks`, which supply them to the commands) and the command line (:mod:`spn.cli`)."""
