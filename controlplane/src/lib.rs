//! adox-controlplane: the REST control plane (axum on its own runtime), policy store and
//! stats aggregation. Built in its own issue; `adoxd` wires it beside the data plane, so
//! neither plane depends on the other.
