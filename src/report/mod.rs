//! PnL reports over a run directory, computed with polars. Never touches live sockets.
