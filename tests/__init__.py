"""The test suite as a regular package: kronfluence (the ``peers`` extra) installs a top-level
``tests`` package of its own, which would otherwise shadow this directory in the scripts the tests
start (``from tests.attribution... import``)."""
