//! Benchmarks and load tools for adox: see the binaries and `benches/`.
