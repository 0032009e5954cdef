// ECharts with only the charts and components the page uses (esbuild keeps just these).
import * as echarts from "echarts/core";
import { HeatmapChart, LineChart } from "echarts/charts";
import { GridComponent, LegendComponent, TooltipComponent, VisualMapComponent } from "echarts/components";
import { CanvasRenderer } from "echarts/renderers";

echarts.use([HeatmapChart, LineChart, GridComponent, LegendComponent, TooltipComponent, VisualMapComponent, CanvasRenderer]);

/** A chart in the element, resized with the window. */
export function chartIn(element: HTMLElement): echarts.ECharts {
  const chart = echarts.init(element);
  new ResizeObserver(() => chart.resize()).observe(element);
  return chart;
}

export type Chart = echarts.ECharts;
