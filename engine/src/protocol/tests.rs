mod frame_props;
