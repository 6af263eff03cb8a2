//! Game Master Redis adapter: the lobby events publisher (pipelined), plus the shared stream reader and offset store.
