"""ROS 2 layer (rclpy glue) over the ROS-free core."""
