"""Training K default jobs (seeds 0..K-1) as one batched model, without tracking: moonprop.batched
under the Lightning Trainer, as hydra/launcher=batched trains them, data drawing included.

    python benchmarks/batched_loop.py 100   # prints {"models": 100, "loop_s": ..., "worst_test_acc": ...}
"""

import dataclasses
import json
import logging
import sys
import time
import warnings

import pytorch_lightning as pl
import torch

from moonprop.batched import BatchedMoonsClassifier, BatchedMoonsData
from moonprop.cli import APP
from moonprop.preflight import configs

warnings.filterwarnings("ignore")
logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)


def main() -> None:
    models = int(sys.argv[1])
    torch.set_num_threads(1)
    (default,) = configs([], APP)
    cfgs = [dataclasses.replace(default, seed=seed) for seed in range(models)]
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=cfgs[0].data.num_batches, logger=False,
                         enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)
    module = BatchedMoonsClassifier(cfgs)
    start = time.perf_counter()
    data = BatchedMoonsData(cfgs)  # the test sets are drawn here, the batches during training
    trainer.fit(module, datamodule=data)
    loop_s = time.perf_counter() - start
    with torch.no_grad():
        scores = module(data.test[0])
    accuracy = ((scores > 0) == (data.test[1] > 0)).float().mean(1)
    print(json.dumps({"models": models, "loop_s": loop_s, "worst_test_acc": accuracy.min().item()}))


if __name__ == "__main__":
    main()
