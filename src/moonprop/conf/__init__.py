# Hydra finds the configs as the package `moonprop.conf`, from a checkout or an installed wheel.
