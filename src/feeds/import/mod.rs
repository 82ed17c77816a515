//! Importers: files in other formats (raw captures, Tardis, Databento DBN, LOBSTER)
//! turned into ticktape events.
