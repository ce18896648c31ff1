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
pub mod error;
pub mod event;
pub mod groups;
mod keys;
pub mod model;
pub mod params;
pub mod request;
mod scheduler;
pub mod store;
pub mod view;
pub mod windows;

pub use action::{Action, Actions, Output, StepContext, StepError};
pub use engine::{Engine, EngineConfig, wait_for_status};
pub use error::EngineError;
pub use event::{Actor, Event, EventKind, RunRow, RunStatus, StepStatus, TaskRow, WaitFor};
pub use groups::{HostGroups, Scheduling, Unplaced};
pub use model::{DefinitionError, Format, Problem, WindowRef, Workflow};
pub use request::{NewRun, Registered, ResumeReport, Submitted};
pub use scheduler::SchedulerStats;
pub use store::{Durability, HostTask, RunQuery, Store, StoreError, StoreOptions, WindowWaiter};
pub use view::{AttemptView, RunView, StepView, TaskView};
pub use windows::{AlwaysOpen, ManualWindows, WindowAnswer, WindowAsk, WindowGate};
