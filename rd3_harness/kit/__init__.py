"""The plugin author's kit: conformance checks (`conformance`), contexts outside a run
(`contexts`) and the package scaffold (`scaffold`). Plugin tests import its public names from
`rd3_harness.testing`, which also holds the pytest fixtures."""
