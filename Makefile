# Shortcuts for those used to make; ./course does the work.
.PHONY: lab test exercises bench
lab: ; ./course lab
test: ; ./course test
exercises: ; ./course exercises
bench: ; ./course bench launch
