//! Shared Redis plumbing on fred: clients with a reconnect policy, the batch stream reader, the offset store and pipelined XADD.
