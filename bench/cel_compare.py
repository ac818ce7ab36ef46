"""Compares the three CEL implementations on PyPI on the expressions Flow Manager supports.

The figures and the choice are in docs/cel.md. Not part of `make bench`: it
needs the two implementations we did not choose, in a venv of its own:

    python3 -m venv /tmp/celv
    /tmp/celv/bin/pip install common-expression-language==0.10.0 \
        cel-expr-python==0.1.3 cel-python==0.5.0
    /tmp/celv/bin/python bench/cel_compare.py
"""

# ruff: noqa
# mypy: ignore-errors
import time, json, sys, traceback

DATA = {
    "input": {"threshold": 25.0, "name": "alpha", "tags": ["x", "y"], "count": 3.0},
    "tasks": {
        "fetch": {
            "outcome": "success",
            "attempts": 1,
            "output": {
                "records": [
                    {"id": 1.0, "value": 10.0},
                    {"id": 2.0, "value": 20.0},
                    {"id": 3.0, "value": 30.0},
                ],
                "rows": 3.0,
            },
        },
        "process": {"outcome": "failure", "attempts": 2, "output": {"total": 60.0}},
    },
    "result": {
        "name": "process",
        "outcome": "failure",
        "attempts": 2,
        "output": {"total": 60.0},
        "error": "boom",
    },
}
CASES = [
    ("result.output.total == 60.0", True),
    ("result.output.total == 60", True),
    ("size(tasks.fetch.output.records) > 2", True),
    ("input.threshold < tasks.process.output.total", True),
    ("tasks.fetch.outcome == 'success' && result.attempts < 3", True),
    ("has(result.output.rows)", False),
    ("tasks.fetch.output.records.exists(r, r.value > 25.0)", True),
    ("tasks.fetch.output.records.exists(r, r.value > 25)", True),
    ("size(tasks.fetch.output.records.filter(r, r.value > 10.0)) == 2", True),
    ("tasks.fetch.output.records.map(r, r.value).all(v, v >= 10.0)", True),
    ("input.name.startsWith('al')", True),
    ("'x' in input.tags", True),
    ("input.count * 2.0 > 5.0", True),
    ("int(input.count) + 1 == 4", True),
    ("result.error.contains('oo')", True),
    ("input.missing == 1", "ERROR"),
    ("input.count * 2 > 5", "ERROR"),
    ("result.outcome == 'failure' ? true : false", True),
]
BAD = ["input.x ==", "1 + 'a' == 2", "inptu.x > 1", "foo(1)", "input.x = 1"]


def bench(fn, n=2000):
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def run_rust():
    import cel

    out = {}
    for expr, want in CASES:
        try:
            p = cel.compile(expr)
            got = p.execute(DATA)
        except Exception as e:
            got = f"ERROR {type(e).__name__}: {e}"[:150]
        out[expr] = got
    bad = {}
    for expr in BAD:
        try:
            p = cel.compile(expr)
            r = p.execute(DATA)
            bad[expr] = f"compiled, eval -> {r!r}"
        except Exception as e:
            bad[expr] = f"{type(e).__name__}: {e}"[:200]
    expr = CASES[6][0]
    c = bench(lambda: cel.compile(expr))
    p = cel.compile(expr)
    e = bench(lambda: p.execute(DATA))
    ctx = cel.Context(DATA)
    e2 = bench(lambda: p.execute(ctx))
    return out, bad, {"compile_us": c, "eval_us(dict)": e, "eval_us(ctx)": e2}


def run_cpp():
    from cel_expr_python import cel

    env = cel.NewEnv(
        variables={"input": cel.Type.DYN, "tasks": cel.Type.DYN, "result": cel.Type.DYN}
    )
    out = {}
    for expr, want in CASES:
        try:
            p = env.compile(expr)
            v = p.eval(data=DATA)
            got = f"ERROR {v.value()}" if v.type() == cel.Type.ERROR else v.plain_value()
        except Exception as e:
            got = f"ERROR {type(e).__name__}: {e}"[:150]
        out[expr] = got
    bad = {}
    for expr in BAD:
        try:
            p = env.compile(expr)
            r = p.eval(data=DATA)
            bad[expr] = f"compiled, eval -> {r.plain_value()!r}"
        except Exception as e:
            bad[expr] = f"{type(e).__name__}: {e}"[:300]
    expr = CASES[6][0]
    c = bench(lambda: env.compile(expr))
    p = env.compile(expr)
    e = bench(lambda: p.eval(data=DATA).plain_value())
    act = env.Activation(DATA)
    e2 = bench(lambda: p.eval(act).plain_value())
    return out, bad, {"compile_us": c, "eval_us(dict)": e, "eval_us(activation)": e2}


def run_py():
    import celpy

    env = celpy.Environment()
    out = {}
    act_data = celpy.json_to_cel(DATA)
    for expr, want in CASES:
        try:
            ast = env.compile(expr)
            prg = env.program(ast)
            got = prg.evaluate(act_data)
            if isinstance(got, Exception):
                raise got
            got = bool(got) if type(got).__name__ == "BoolType" else got
        except Exception as e:
            got = f"ERROR {type(e).__name__}: {e}"[:150]
        out[expr] = got
    bad = {}
    for expr in BAD:
        try:
            ast = env.compile(expr)
            prg = env.program(ast)
            r = prg.evaluate(act_data)
            bad[expr] = f"compiled, eval -> {r!r}"[:150]
        except Exception as e:
            bad[expr] = f"{type(e).__name__}: {e}"[:300]
    expr = CASES[6][0]
    c = bench(lambda: env.program(env.compile(expr)), 200)
    prg = env.program(env.compile(expr))
    e = bench(lambda: prg.evaluate(celpy.json_to_cel(DATA)), 200)
    return out, bad, {"compile_us": c, "eval_us(incl json_to_cel)": e}


for name, fn in [
    ("rust common-expression-language", run_rust),
    ("cpp cel-expr-python", run_cpp),
    ("python cel-python", run_py),
]:
    print("=" * 20, name)
    try:
        out, bad, t = fn()
    except Exception:
        traceback.print_exc()
        continue
    ok = 0
    for expr, want in CASES:
        got = out[expr]
        flag = (
            "OK "
            if (
                (want == "ERROR" and str(got).startswith("ERROR"))
                or (want != "ERROR" and got is want)
            )
            else "BAD"
        )
        if flag == "OK ":
            ok += 1
        print(f"  {flag} {expr!r:70} -> {got!r}"[:220])
    print("  correct:", ok, "/", len(CASES))
    for k, v in bad.items():
        print(f"  bad {k!r}: {v}"[:330])
    print("  timing:", {k: round(v, 2) for k, v in t.items()})
