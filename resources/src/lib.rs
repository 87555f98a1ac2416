//! warren-resources: what a node has to share out, and what it does when it runs short.
//!
//! - [`alarm`]: the memory and disk alarms that hold publishers back (the limits, their
//!   evaluation, and the shared state front doors watch).
//! - [`queue_memory`]: the node's budget for bodies queues keep in memory for their
//!   consumers beyond their window, and each queue's claim on it.
//!
//! Both are pure bookkeeping: the node samples memory and disk and sets the alarms;
//! queues record what they hold. Nothing here knows of queues, actors or storage.

#![deny(missing_docs)]

pub mod alarm;
pub mod queue_memory;
