"""Partsflow's benchmark (`make bench`): each figure measured with its raw ceiling in
the same run, so that the ratios hold on a noisy machine. See bench/README.md."""
