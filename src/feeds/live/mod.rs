//! Live venue connectors over websockets, normalizing onto the bus.
