"""NIAF training, data and evaluation tools, installed as the import package ``niaf_train``.

The model itself (``modeling_niaf``, ``configuration_niaf``) needs none of this; these are the tools around it:

* :mod:`niaf_train.data`: datasets on disk (CALVIN, LIBERO, LeRobot v3, generated Meta-World demonstrations),
  one registry of sources, chunking, statistics, and the ``niaf-data`` command;
* :mod:`niaf_train.training`: fine-tuning with Accelerate and PEFT, and the ``niaf-train`` command;
* :mod:`niaf_train.evaluation`: closed-loop evaluation in Meta-World, and the ``niaf-eval`` command;
* :mod:`niaf_train.baselines`: the paper's comparison heads (waypoints, B-spline, flow matching) on NIAF's
  backbone, for the head ablation (``benchmarks/bench_heads.py``);
* :mod:`niaf_train.tiny`: the one tiny random-weight backbone built in code (tests, examples, default config);
* :mod:`niaf_train.demo`: the main job of the quick start.
"""
