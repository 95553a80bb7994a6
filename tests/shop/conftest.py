"""The shop's fixtures come from the `labkit-shop` pytest11 plugin
(labkit.shop.pytest_fixtures), the same ones lessons use in %%ipytest cells."""
