"""Flow Manager: runs flows of tasks and conditions, defined as data, over gRPC.

The domain (`models`, `events`, `validation`, `engine`, `tasks`) knows
nothing of gRPC; `api` converts messages to domain models and back.
"""
