"""effinfer-core: what every method package shares (and nothing method-specific).

- ``atomic``: ``write_atomic``, ``atomic_file``, ``atomic_dir``, ``locked`` -- never a half-written file;
- ``run_folder``: ``RunFolder`` -- steps keyed by the hash of their inputs, skip-if-done, bound to one parent/data set;
- ``config``: YAML profiles merged over defaults (``load_config``, ``profile_path``, ``ConfigError``);
- ``trainer``: ``TrainerFlags`` (the CLI's Lightning flags) and the precision policy (``training_precision``);
- ``training``: ``warmup_cosine``, ``set_max_steps``, ``FrozenTeacher``, ``checkpointed_trainer_kwargs``;
- ``checkpoint_io``: ``FileCheckpointIO`` (checkpoints streamed to disk);
- ``progress``: ``Progress``, ``LogProgress``, ``library_output_to`` -- output a person can follow.

Heavy imports (Lightning) happen in the modules that need them, so ``from effinfer_core.atomic import ...`` is cheap.
"""
