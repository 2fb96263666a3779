//! An upstream reply through the resolver's checks and classification.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| adox_dataplane::fuzzing::upstream_response(data));
