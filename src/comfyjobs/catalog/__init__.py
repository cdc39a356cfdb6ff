"""The workflow catalog: manifests and templates published to Redis as immutable, content-addressed
versions (bundle), one of them active (store); each process builds a version's registry once (registries)."""
