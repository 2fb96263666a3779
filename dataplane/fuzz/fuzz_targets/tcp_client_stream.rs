//! A client TCP stream through RFC 7766 framing (pieces, pipelining window) and each message through the client path.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| adox_dataplane::fuzzing::tcp_client_stream(data));
