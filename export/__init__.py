"""export package of oneshot-nas."""
import nas  # noqa: F401  (clear error when MXNet is missing)
