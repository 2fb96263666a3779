//! SVCB and TLSA RDATA through the signal parsers.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| adox_dataplane::fuzzing::signals(data));
