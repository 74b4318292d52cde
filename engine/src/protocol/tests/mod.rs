//! Tests of the replica protocol: property tests of the decoders and
//! end-to-end tests of server and client against an in-memory fake replica.

mod alloc;
mod fake;
mod net;
mod props;
mod trace;
