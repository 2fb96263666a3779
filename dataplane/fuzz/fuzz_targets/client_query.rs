//! A client datagram through parsing, the packet cache and response building.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| adox_dataplane::fuzzing::client_query(data));
