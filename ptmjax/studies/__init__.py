"""Studies built on training runs: the stage comparison (`compare`) and the hyper-parameter sweep (`sweep`)."""
