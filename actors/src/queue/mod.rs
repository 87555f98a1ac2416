//! Queues: the pure state machine and its actor shell.
