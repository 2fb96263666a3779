//! A reply's DNSSEC records through the validator's parsers, verification and proofs.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| adox_dataplane::fuzzing::validator(data));
