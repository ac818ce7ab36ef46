"""The engine: checks a flow, compiles it into a plan, and runs it step by step.

Its public face is `Engine` (and the `ValidationReport` of `Engine.validate`,
the error type `CANCELLED` of what `Engine.cancel` cuts short);
everything else here but `routing` is private, one module per concern:

    _engine      the entry: `Engine.run`/`execute`/`validate`
    _validation  the rules a flow must follow, reported as violations
    _plan        compiling a valid flow into the plan an execution runs
    routing      what runs after a task, and the targets a task can reach
                 (public: `flowctl graph` asks it too)
    _analysis    warnings about a valid flow (unreachable tasks, endless loops)
    _execution   one execution: the loop that yields its events, from its
                 start or resumed from how far it got (`Resumption`)
    _attempts    one attempt of one task: timeout, output checks
    _deadline    one timer per execution that interrupts what it awaits,
                 all in one heap per engine
    _retry       retry decisions and backoff delays
    _scope       the variables expressions see as the execution goes
"""

from flowservice.engine._deadline import CANCELLED
from flowservice.engine._engine import Engine, Resumption, ValidationReport

__all__ = ["CANCELLED", "Engine", "Resumption", "ValidationReport"]
