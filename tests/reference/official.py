"""The official code's formulas that more than one script here needs, transcribed from
main_pcl.py (numpy only)."""
import numpy as np


def concentrations(assign, sq_dist, k, tau):
    """Concentration phi of each of k clusters, exactly as main_pcl.py run_kmeans (alpha = 10):
    mean distance / log(Z + 10), clusters of <= 1 member get the largest, clipped to the 10th..90th
    percentile, scaled to mean tau. sq_dist: each point's squared distance to its centroid, as
    faiss returns it."""
    Dcluster = [[] for _ in range(k)]
    for im, i in enumerate(assign):
        Dcluster[i].append(sq_dist[im])
    density = np.zeros(k)
    for i, dist in enumerate(Dcluster):
        if len(dist) > 1:
            density[i] = (np.asarray(dist) ** 0.5).mean() / np.log(len(dist) + 10)
    dmax = density.max()
    for i, dist in enumerate(Dcluster):
        if len(dist) <= 1:
            density[i] = dmax
    density = density.clip(np.percentile(density, 10), np.percentile(density, 90))
    return tau * density / density.mean()
