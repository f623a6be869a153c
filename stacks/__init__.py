"""The CDK app's constructs: storage, worker, coordinator, composed by :class:`MuStack`."""
