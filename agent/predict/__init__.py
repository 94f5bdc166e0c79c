"""`opaudit lint`: the snapshot a runtime would give a container, predicted from its
manifests, its runtime model and its image, so the rules of `diagnose` judge it before
deploy. Where a runtime model goes: docs/ARCHITECTURE.md."""
