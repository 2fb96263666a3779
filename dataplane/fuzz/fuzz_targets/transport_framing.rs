//! Bytes of a DoT stream or a DoQ stream through the answer framing.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| adox_dataplane::fuzzing::transport_framing(data));
