"""Data: raw readers, staypoints, samples, the on-disk format, batches and the synthetic set."""
