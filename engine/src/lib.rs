//! Lariat's durable workflow engine.
//!
//! A workflow is a DAG of steps ([`model`]). Each run of it is executed by one executor,
//! which records every transition as an [`Event`] committed to SQLite before acting on it
//! ([`store`]), so a run survives a crash at any moment and resumes where it stopped.
//! Steps do their work through [`Action`]s, registered by name.
//!
//! The [`Engine`] handle is the interface; `scheduler` is the machinery behind it.

pub mod action;
pub mod engine;
pub mod event;
pub mod model;
mod scheduler;
pub mod store;
pub mod windows;

pub use action::{Action, Actions, Output, StepContext, StepError};
pub use engine::{
    AttemptView, Engine, EngineConfig, EngineError, NewRun, Registered, ResumeReport, RunView,
    StepView, Submitted, TaskView, validate_new_run, wait_for_status,
};
pub use event::{Actor, Event, EventKind, RunRow, RunStatus, StepStatus, TaskRow, WaitFor};
pub use model::{DefinitionError, Format, Problem, Workflow};
pub use scheduler::SchedulerStats;
pub use store::{Durability, RunQuery, Store, StoreError, StoreOptions};
pub use windows::{AlwaysOpen, ManualWindows, WindowGate};
