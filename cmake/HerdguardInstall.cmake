# install rules: added by a later step
