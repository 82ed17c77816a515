//! The simulated exchange: matching against the replayed book, latency / queue / fee
//! models, the order-gateway protocol and run outputs. Never reads Parquet directly and
//! never owns sockets: the replay or paper host feeds it events and orders.
