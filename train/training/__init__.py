"""Fine-tuning NIAF (``niaf-train``), one module per step of a run.

* :mod:`.arguments`: the configuration (model / data / training / peft options, YAML and ``--key`` overrides);
* :mod:`.dataset`: the run's chunk dataset through :mod:`niaf_train.data.sources`, the episode split, the layout;
* :mod:`.building`: processor and model for that layout (tiny, a pretrained VLM, or a NIAF checkpoint);
* :mod:`.collation`: the seeded sampler and the collator (input value checks on the CPU side);
* :mod:`.loop`: the Accelerate loop; :mod:`.validation`: held-out open-loop metrics; :mod:`.export`: the final
  checkpoint, its card and the Hub push; :mod:`.checkpointing` and :mod:`.run_folder`: atomic checkpoints, resume,
  the output folder's lock and checks; :mod:`.lora`: PEFT;
* :mod:`.cli`: the ``niaf-train`` command line.
"""
