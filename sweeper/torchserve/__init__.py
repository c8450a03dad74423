"""Everything that talks to TorchServe: the process (`process`, `reaper`), its
config.properties and environment (`config`), the management API (`management`), the
Prometheus metrics (`metrics`) and the process-tree sampler (`probe`).

These modules take primitives (keys and values, ports, a model name and its settings),
never a sweep or a trial: nothing here imports `sweeper.spec` or `sweeper.plan`.
"""
