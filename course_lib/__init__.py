from course_lib.launcher import launch
