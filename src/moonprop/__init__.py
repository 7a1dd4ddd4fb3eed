"""moonprop: micrograd's moons experiment as a Hydra + Lightning + MLflow pipeline.

From Python (api.py): `moonprop.run(overrides) -> Result`, `moonprop.build(overrides) -> (module,
datamodule)`, `moonprop.evaluate(ckpt_path= | model_uri=, overrides) -> Evaluation`, and
`moonprop.ConfigError` for bad input. They are imported on first use, so that
`import moonprop.config` (the CLI's `--help`) stays light.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["ConfigError", "Evaluation", "Result", "build", "evaluate", "run"]


def __getattr__(name: str) -> Any:
    if name == "ConfigError":
        from moonprop.config import ConfigError

        return ConfigError
    if name in ("Result", "build", "run", "Evaluation", "evaluate"):
        from moonprop import api

        return getattr(api, name)
    raise AttributeError(f"module 'moonprop' has no attribute {name!r}")
