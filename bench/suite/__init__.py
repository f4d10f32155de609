"""The benchmark suite: tasks (``bench.suite.tasks``, read from ``tasks.toml``), each a training reward, the true
score evaluation records beside it, and prompt sets, on the model families it runs on."""
