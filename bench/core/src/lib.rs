//! A compiled core for one flow's run: the loop over its tasks and the
//! `ExecuteResponse` it ends with, written as protobuf wire bytes by hand.
//!
//! A benchmark experiment (docs/performance.md, "A compiled core, measured"),
//! not part of the service. `bench/core/plan.py` turns a compiled `Plan` into
//! the tables `Plan` holds here: per task its function, the `Task` and params
//! its context carries, where each outcome routes and the pre-encoded
//! decision it reports. Tasks are Python `async def` functions: each coroutine
//! is driven with `PyIter_Send`; one that completes at once (the built-in
//! tasks do) costs no event-loop turn, one that suspends is handed back to
//! Python (`Run.pending`), which awaits it and calls `Run.resume`/`Run.fail`.

use std::os::raw::c_int;
use std::ptr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::AsPyPointer;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyList, PyLong, PyString, PyTuple, PyType};

extern "C" {
    // pyo3-ffi 0.17 declares it without its result (PySendResult: 0 returned, 1 yielded, -1 raised).
    fn PyIter_Send(iter: *mut ffi::PyObject, arg: *mut ffi::PyObject, out: *mut *mut ffi::PyObject) -> c_int;
}

const SUCCESS: usize = 0;
const FAILURE: usize = 1;
const STATUS_COMPLETED: u64 = 1;
const STATUS_FAILED: u64 = 2;

/// One task of the plan: what runs, what its context carries, where it routes.
struct TaskEntry {
    name: String,
    function: PyObject,
    task: PyObject,
    params: PyObject,
    /// The task after each outcome (SUCCESS, FAILURE); None stops the flow.
    next: [Option<usize>; 2],
    /// The `decision` field (12) of its `TaskResult` after each outcome, encoded, or empty.
    decision: [Vec<u8>; 2],
}

/// A compiled flow's tables, read-only, shared by every run.
#[pyclass]
struct Plan {
    flow_id: String,
    start: usize,
    max_steps: usize,
    tasks: Vec<TaskEntry>,
    context: PyObject,
    failure_type: PyObject,
    new_id: PyObject,
    results_view: PyObject,
}

type TaskRow = (String, PyObject, PyObject, PyObject, i64, i64, Vec<u8>, Vec<u8>);

#[pymethods]
impl Plan {
    /// `tasks`: (name, function, task, params, next on success, next on failure (-1: stop),
    /// decision bytes on success, on failure); `context`: the `TaskContext` class;
    /// `failure_type`: `TaskFailure`; `new_id`: makes an execution id; `results_view`:
    /// the mapping tasks see as earlier results.
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        flow_id: String,
        start: usize,
        max_steps: usize,
        tasks: Vec<TaskRow>,
        context: PyObject,
        failure_type: PyObject,
        new_id: PyObject,
        results_view: PyObject,
    ) -> PyResult<Self> {
        let count = tasks.len();
        let index = |i: i64| -> PyResult<Option<usize>> {
            match i {
                -1 => Ok(None),
                i if i >= 0 && (i as usize) < count => Ok(Some(i as usize)),
                _ => Err(PyValueError::new_err("a task index out of range")),
            }
        };
        let mut entries = Vec::with_capacity(count);
        for (name, function, task, params, on_success, on_failure, d_success, d_failure) in tasks {
            entries.push(TaskEntry {
                name,
                function,
                task,
                params,
                next: [index(on_success)?, index(on_failure)?],
                decision: [d_success, d_failure],
            });
        }
        if start >= count {
            return Err(PyValueError::new_err("start out of range"));
        }
        Ok(Plan { flow_id, start, max_steps, tasks: entries, context, failure_type, new_id, results_view })
    }
}

/// One finished task run.
struct Finished {
    task: usize,
    outcome: usize,
    output: Option<PyObject>,
    error: String,
    error_type: String,
    started: Duration,
    took: Duration,
    step: u64,
}

/// What a run is doing between steps (kept in `Run` while a task is suspended).
struct State {
    plan: Py<Plan>,
    flow_input: PyObject,
    execution_id: PyObject,
    started: Duration,
    started_at: Instant,
    results: Vec<Finished>,
    /// The task running now, with when it started (wall clock, and monotonic).
    current: Option<(usize, Duration, Instant)>,
    status: u64,
    error: String,
    error_type: String,
    failed_task: String,
}

enum Sent {
    Returned(PyObject),
    Yielded(PyObject),
    Raised(PyErr),
}

fn send(py: Python<'_>, coroutine: &PyAny) -> Sent {
    let mut out: *mut ffi::PyObject = ptr::null_mut();
    // SAFETY: coroutine is a live object, the GIL is held, `out` receives a new reference.
    unsafe {
        match PyIter_Send(coroutine.as_ptr(), ffi::Py_None(), &mut out) {
            0 => Sent::Returned(PyObject::from_owned_ptr(py, out)),
            1 => Sent::Yielded(PyObject::from_owned_ptr(py, out)),
            _ => Sent::Raised(PyErr::fetch(py)),
        }
    }
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

impl State {
    fn new(py: Python<'_>, plan: Py<Plan>, flow_input: PyObject) -> PyResult<Self> {
        let execution_id = plan.borrow(py).new_id.call0(py)?;
        Ok(State {
            plan,
            flow_input,
            execution_id,
            started: now(),
            started_at: Instant::now(),
            results: Vec::new(),
            current: None,
            status: STATUS_COMPLETED,
            error: String::new(),
            error_type: String::new(),
            failed_task: String::new(),
        })
    }

    /// Runs tasks from `next` until one suspends (its coroutine and what it yielded) or the end.
    fn advance(&mut self, py: Python<'_>, mut next: Option<usize>) -> PyResult<Option<(PyObject, PyObject)>> {
        let plan_ref = self.plan.clone_ref(py);
        let plan = plan_ref.borrow(py);
        while let Some(index) = next {
            if self.results.len() >= plan.max_steps {
                self.status = STATUS_FAILED;
                self.error = format!("step limit reached: the flow ran {} tasks (max_steps)", plan.max_steps);
                self.error_type = "StepLimitReached".to_string();
                return Ok(None);
            }
            let entry = &plan.tasks[index];
            let step = self.results.len() + 1;
            self.current = Some((index, now(), Instant::now()));
            let args = PyTuple::new(
                py,
                [
                    self.execution_id.clone_ref(py),
                    plan.flow_id.to_object(py),
                    entry.task.clone_ref(py),
                    entry.params.clone_ref(py),
                    self.flow_input.clone_ref(py),
                    step.to_object(py),
                    1.to_object(py),
                    plan.results_view.clone_ref(py),
                ],
            );
            let coroutine = entry.function.call1(py, (plan.context.call1(py, args)?,))?;
            next = match send(py, coroutine.as_ref(py)) {
                Sent::Returned(value) => self.record_output(py, &plan, value)?,
                Sent::Raised(err) => self.record_error(py, &plan, err)?,
                Sent::Yielded(awaited) => return Ok(Some((coroutine, awaited))),
            };
        }
        Ok(None)
    }

    fn finish(&mut self, plan: &Plan, outcome: usize, output: Option<PyObject>, error: String, error_type: String) -> Option<usize> {
        let (index, started, started_at) = self.current.take().expect("a task is running");
        let step = self.results.len() as u64 + 1;
        let took = started_at.elapsed();
        let next = plan.tasks[index].next[outcome];
        if next.is_none() && outcome == FAILURE {
            let name = &plan.tasks[index].name;
            self.status = STATUS_FAILED;
            self.error = format!("task '{}' failed: {}", name, error);
            self.error_type = error_type.clone();
            self.failed_task = name.clone();
        }
        self.results.push(Finished { task: index, outcome, output, error, error_type, started, took, step });
        next
    }

    fn record_output(&mut self, py: Python<'_>, plan: &Plan, value: PyObject) -> PyResult<Option<usize>> {
        let output = if value.is_none(py) || value.as_ref(py).len().unwrap_or(0) == 0 { None } else { Some(value) };
        Ok(self.finish(plan, SUCCESS, output, String::new(), String::new()))
    }

    fn record_error(&mut self, py: Python<'_>, plan: &Plan, err: PyErr) -> PyResult<Option<usize>> {
        let value = err.value(py);
        let (error, error_type) = if value.is_instance(plan.failure_type.as_ref(py).downcast::<PyType>()?)? {
            let text = value.str()?.to_str()?.to_string();
            let kind: String = value.getattr("error_type")?.extract()?;
            (if text.is_empty() { "task failed".to_string() } else { text }, kind)
        } else if value.is_instance_of::<pyo3::exceptions::PyException>()? {
            let kind = value.get_type().name()?.to_string();
            (format!("{}: {}", kind, value.str()?.to_str()?), kind)
        } else {
            return Err(err); // cancellation and the like: not the task's failure
        };
        Ok(self.finish(plan, FAILURE, None, error, error_type))
    }

    fn reply(&self, py: Python<'_>) -> PyResult<Vec<u8>> {
        let plan = self.plan.borrow(py);
        let mut out = Vec::with_capacity(128 + 96 * self.results.len());
        put_str(&mut out, 1, &plan.flow_id);
        put_varint_field(&mut out, 2, self.status);
        for result in &self.results {
            put_str(&mut out, 3, &plan.tasks[result.task].name);
        }
        put_str(&mut out, 4, &self.failed_task);
        put_str(&mut out, 5, self.execution_id.as_ref(py).downcast::<PyString>()?.to_str()?);
        let mut body = Vec::with_capacity(128);
        for result in &self.results {
            body.clear();
            task_result(py, &plan, result, &mut body)?;
            put_bytes(&mut out, 6, &body);
        }
        put_str(&mut out, 7, &self.error);
        put_time(&mut out, 8, self.started);
        put_time(&mut out, 9, self.started_at.elapsed());
        if let Some(last) = self.results.last() {
            body.clear();
            match &last.output {
                Some(output) => put_value(py, &mut body, output.as_ref(py))?,
                None => put_bytes(&mut body, 5, &[]), // an empty struct_value, as the server says
            }
            put_bytes(&mut out, 10, &body);
        }
        put_str(&mut out, 11, &self.error_type);
        Ok(out)
    }
}

fn task_result(py: Python<'_>, plan: &Plan, result: &Finished, out: &mut Vec<u8>) -> PyResult<()> {
    let entry = &plan.tasks[result.task];
    put_str(out, 1, &entry.name);
    put_varint_field(out, 2, result.outcome as u64 + 1);
    if let Some(output) = &result.output {
        let mut fields = Vec::new();
        put_struct(py, &mut fields, output.as_ref(py))?;
        put_bytes(out, 3, &fields);
    }
    put_str(out, 4, &result.error);
    put_time(out, 5, result.started);
    put_time(out, 6, result.took);
    put_varint_field(out, 7, result.step);
    put_varint_field(out, 8, 1);
    put_str(out, 9, &result.error_type);
    out.extend_from_slice(&entry.decision[result.outcome]);
    Ok(())
}

// The wire format: https://protobuf.dev/programming-guides/encoding/

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire_type: u32) {
    put_varint(out, ((field << 3) | wire_type) as u64);
}

/// A varint field, left out at its default (0), as proto3 does.
fn put_varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    if value != 0 {
        put_tag(out, field, 0);
        put_varint(out, value);
    }
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A string field, left out when empty.
fn put_str(out: &mut Vec<u8>, field: u32, text: &str) {
    if !text.is_empty() {
        put_bytes(out, field, text.as_bytes());
    }
}

/// A `Timestamp` or `Duration` (the same two fields: seconds, nanos).
fn put_time(out: &mut Vec<u8>, field: u32, time: Duration) {
    let mut body = Vec::with_capacity(16);
    put_varint_field(&mut body, 1, time.as_secs());
    put_varint_field(&mut body, 2, time.subsec_nanos() as u64);
    put_bytes(out, field, &body);
}

/// A `google.protobuf.Struct`'s body: its `fields` map entries (key 1, Value 2).
fn put_struct(py: Python<'_>, out: &mut Vec<u8>, mapping: &PyAny) -> PyResult<()> {
    let dict = mapping.downcast::<PyDict>()?;
    let mut entry = Vec::new();
    let mut value = Vec::new();
    for (key, item) in dict.iter() {
        entry.clear();
        value.clear();
        put_bytes(&mut entry, 1, key.downcast::<PyString>()?.to_str()?.as_bytes());
        put_value(py, &mut value, item)?;
        put_bytes(&mut entry, 2, &value);
        put_bytes(out, 1, &entry);
    }
    Ok(())
}

/// A `google.protobuf.Value`'s body, from a JSON-like Python value.
fn put_value(py: Python<'_>, out: &mut Vec<u8>, item: &PyAny) -> PyResult<()> {
    if item.is_none() {
        put_tag(out, 1, 0);
        put_varint(out, 0);
    } else if let Ok(flag) = item.downcast::<PyBool>() {
        put_tag(out, 4, 0);
        put_varint(out, flag.is_true() as u64);
    } else if item.is_instance_of::<PyLong>()? || item.is_instance_of::<PyFloat>()? {
        let number: f64 = item.extract()?;
        put_tag(out, 2, 1);
        out.extend_from_slice(&number.to_le_bytes());
    } else if let Ok(text) = item.downcast::<PyString>() {
        put_bytes(out, 3, text.to_str()?.as_bytes());
    } else if let Ok(list) = item.downcast::<PyList>() {
        let mut values = Vec::new();
        let mut one = Vec::new();
        for element in list.iter() {
            one.clear();
            put_value(py, &mut one, element)?;
            put_bytes(&mut values, 1, &one);
        }
        put_bytes(out, 6, &values);
    } else {
        let mut fields = Vec::new();
        put_struct(py, &mut fields, item)?;
        put_bytes(out, 5, &fields);
    }
    Ok(())
}

/// A run that suspended: the Python side awaits `pending` and reports back.
#[pyclass]
struct Run {
    state: State,
    pending: Option<(PyObject, PyObject)>,
}

#[pymethods]
impl Run {
    /// The suspended coroutine and what it yielded, or None when the run ended.
    fn pending(&mut self) -> Option<(PyObject, PyObject)> {
        self.pending.take()
    }

    /// The suspended task returned `value`: record it and run on.
    fn resume(&mut self, py: Python<'_>, value: PyObject) -> PyResult<()> {
        let plan_ref = self.state.plan.clone_ref(py);
        let next = self.state.record_output(py, &plan_ref.borrow(py), value)?;
        self.pending = self.state.advance(py, next)?;
        Ok(())
    }

    /// The suspended task raised `error` (an Exception): record the failure and run on.
    fn fail(&mut self, py: Python<'_>, error: &PyAny) -> PyResult<()> {
        let plan_ref = self.state.plan.clone_ref(py);
        let next = self.state.record_error(py, &plan_ref.borrow(py), PyErr::from_value(error))?;
        self.pending = self.state.advance(py, next)?;
        Ok(())
    }

    /// The `ExecuteResponse`, serialized.
    fn reply<'py>(&self, py: Python<'py>) -> PyResult<&'py PyBytes> {
        Ok(PyBytes::new(py, &self.state.reply(py)?))
    }
}

/// Runs `plan` with `flow_input`: the reply's bytes when every task completed at once
/// (None with `encode` false: the loop alone), else the suspended `Run`.
#[pyfunction]
fn execute(py: Python<'_>, plan: Py<Plan>, flow_input: PyObject, encode: bool) -> PyResult<PyObject> {
    let start = plan.borrow(py).start;
    let mut state = State::new(py, plan, flow_input)?;
    let pending = state.advance(py, Some(start))?;
    if pending.is_some() {
        return Ok(Py::new(py, Run { state, pending })?.into_py(py));
    }
    if !encode {
        return Ok(py.None());
    }
    Ok(PyBytes::new(py, &state.reply(py)?).into_py(py))
}

#[pymodule]
fn _flowcore(_py: Python<'_>, module: &PyModule) -> PyResult<()> {
    module.add_class::<Plan>()?;
    module.add_class::<Run>()?;
    module.add_function(wrap_pyfunction!(execute, module)?)?;
    Ok(())
}
